// Types of the corecast JavaScript client.

/** Headers to send: a Map or object of name -> value(s), or [name, value] pairs in order. */
export type HeadersInit =
  | Map<string, string | string[]>
  | Record<string, string | string[]>
  | Array<[string, string]>;

export type Payload = Uint8Array | string;

export type Credentials =
  | { kind: 'password'; user: string; password: string | Uint8Array }
  | { kind: 'bearer'; token: string | Uint8Array }
  | { kind: 'jwt'; jwt: string };

export interface ReconnectOptions {
  /** First wait before reconnecting, ms (default 100). Each next wait doubles. */
  minDelay?: number;
  /** Longest wait, ms (default 5000). */
  maxDelay?: number;
  /** Attempts in a row before the client gives up and closes (default Infinity). */
  maxAttempts?: number;
}

/** A WebSocket constructor, as the browser's or Node's global one. */
export interface WebSocketConstructor {
  new (url: string): WebSocketLike;
}

export interface WebSocketLike {
  binaryType: string;
  readonly bufferedAmount: number;
  onopen: ((ev: any) => void) | null;
  onmessage: ((ev: { data: ArrayBuffer | ArrayBufferView | string }) => void) | null;
  onerror: ((ev: any) => void) | null;
  onclose: ((ev: { code?: number }) => void) | null;
  send(data: Uint8Array): void;
  close(code?: number): void;
}

export interface ConnectOptions {
  /** Client name sent in HELLO (at most 64 bytes of UTF-8). Default "corecast-js". */
  name?: string;
  /** Plain shared token (PROTOCOL.md 4.1). */
  token?: string | Uint8Array;
  /** Typed credential (PROTOCOL.md 14), needs protocol 1.1. */
  credentials?: Credentials;
  /** Ask the broker not to deliver this client's publications back to it (1.1). */
  noEcho?: boolean;
  /** Ask for protocol 1.1 (default true). */
  protocol11?: boolean;
  /** WebSocket constructor; default globalThis.WebSocket. */
  WebSocket?: WebSocketConstructor;
  /** Time for the WebSocket to open and WELCOME to arrive, ms (default 5000). */
  connectTimeout?: number;
  /** Default timeout of flush(), ms (default 10000). */
  flushTimeout?: number;
  /** Default timeout of request(), ms (default 5000). */
  requestTimeout?: number;
  /** How long close() tries to send what is buffered, ms (default 2000). */
  closeTimeout?: number;
  /** Bytes of frames the client buffers while disconnected or while the socket is backed up (default 8 MiB). */
  maxBufferBytes?: number;
  /** ws.bufferedAmount above which frames wait in the client's buffer (default 1 MiB). */
  bufferedAmountLimit?: number;
  /** Messages an iterated subscription holds before it discards (default 65536). */
  subscriptionCapacity?: number;
  /** Reconnection policy, or false to close the client when the connection is lost. */
  reconnect?: ReconnectOptions | false;
}

export interface ServerInfo {
  version: number;
  maxFrame: number;
  pingIntervalMs: number;
  coreId: number;
  connectionId: bigint;
  serverName: string;
  /** Whether the session is a protocol 1.1 session. */
  v11: boolean;
  /** The URL of the connection. */
  url: string;
}

export interface PublishOptions {
  headers?: HeadersInit;
  replyTo?: string;
}

export interface SubscribeOptions {
  /** Queue group: each message goes to one member of the group (1.1). */
  queue?: string;
  /** Let the broker drop (and report with DROPPED) rather than close a slow connection. */
  lossy?: boolean;
}

export interface RequestOptions {
  timeout?: number;
  headers?: HeadersInit;
}

export declare class Message {
  readonly subscription: Subscription;
  readonly sid: number;
  readonly topic: string;
  readonly replyTo: string | null;
  readonly payload: Uint8Array;
  /** Headers as name -> values, or null when the message carried no header block. */
  readonly headers: Map<string, string[]> | null;
  /** Headers as ordered pairs, or null. */
  readonly headerList: Array<[string, string]> | null;
  text(): string;
  json<T = unknown>(): T;
  respond(payload?: Payload, options?: PublishOptions): void;
}

export declare class Subscription implements AsyncIterable<Message> {
  readonly sid: number;
  readonly topic: string;
  readonly queue: string;
  readonly lossy: boolean;
  /** Messages the broker reported dropped (DROPPED). */
  readonly dropped: bigint;
  /** Messages discarded by the client because the iterator's queue was full. */
  readonly discarded: number;
  readonly received: number;
  readonly closed: boolean;
  unsubscribe(): void;
  [Symbol.asyncIterator](): AsyncIterator<Message>;
}

export interface DroppedEvent {
  sid: number;
  count: bigint;
  subscription: Subscription | null;
  /** 'server': a DROPPED frame; 'client': the iterator's queue was full. */
  site: 'server' | 'client';
}

export interface ClientEvents {
  connect: ServerInfo;
  reconnect: ServerInfo;
  disconnect: Error;
  reconnecting: { attempt: number; delay: number; error: Error };
  error: Error;
  dropped: DroppedEvent;
  goaway: { reason: number; graceMs: number };
  /** null when closed by close(). */
  close: Error | null;
}

export declare class Client {
  readonly info: ServerInfo | null;
  readonly state: 'connecting' | 'open' | 'draining' | 'disconnected' | 'closed';
  readonly isClosed: boolean;
  /** Bytes waiting in the send buffer. */
  readonly bufferedBytes: number;
  readonly subscriptions: Map<number, Subscription>;
  on<E extends keyof ClientEvents>(event: E, listener: (arg: ClientEvents[E]) => void): this;
  off<E extends keyof ClientEvents>(event: E, listener: (arg: ClientEvents[E]) => void): this;
  /** Throws InvalidTopicError, InvalidHeaderError, FrameTooLargeError, BufferFullError, UnsupportedError, ClosedError. */
  publish(topic: string, payload?: Payload, options?: PublishOptions): void;
  subscribe(topic: string, callback: (msg: Message) => void | Promise<void>): Subscription;
  subscribe(topic: string, options?: SubscribeOptions, callback?: (msg: Message) => void | Promise<void>): Subscription;
  unsubscribe(sub: Subscription | number): void;
  flush(timeout?: number): Promise<void>;
  request(topic: string, payload?: Payload, options?: RequestOptions): Promise<Message>;
  close(): Promise<void>;
}

export declare function connect(url: string | string[], options?: ConnectOptions): Promise<Client>;
export declare function backoffDelay(attempt: number, options: { minDelay: number; maxDelay: number }): number;

// Errors
export declare class CorecastError extends Error {}
export declare class ProtocolError extends CorecastError {
  readonly kind: string;
  readonly code: number;
  readonly field?: string;
  readonly detail?: string;
}
export declare class ServerError extends CorecastError {
  readonly code: number;
  readonly fatal: boolean;
  readonly text: string;
}
export declare class AuthError extends ServerError {}
export declare class InvalidTopicError extends CorecastError {}
export declare class InvalidHeaderError extends CorecastError {}
export declare class FrameTooLargeError extends CorecastError {}
export declare class BufferFullError extends CorecastError {}
export declare class NoRespondersError extends CorecastError {
  readonly topic: string;
}
export declare class TimeoutError extends CorecastError {}
export declare class ClosedError extends CorecastError {}
export declare class ConnectionError extends CorecastError {}
export declare class UnsupportedError extends CorecastError {}

// Codec (frame objects use the field names of PROTOCOL.md and its vectors)
export type Frame = { type: string; [field: string]: unknown };
export declare class Decoder {
  constructor(options?: { direction?: 'server' | 'client'; maxFrame?: number });
  maxFrame: number;
  readonly buffered: number;
  push(bytes: Uint8Array | ArrayBuffer): void;
  /** The next whole frame, null when more bytes are needed; throws ProtocolError. */
  next(): Frame | null;
}
export declare function encodeFrame(frame: Frame, direction?: 'client' | 'server'): Uint8Array;
export declare function decodeFrame(bytes: Uint8Array, direction?: 'client' | 'server', maxFrame?: number): Frame;
export declare function headerPairs(headers: HeadersInit | null | undefined): Array<[string, string]>;
export declare function headersToMap(pairs: Array<[string, string]>): Map<string, string[]>;
export declare function encodeHeaderBlock(pairs: Array<[string, string]>): Uint8Array;
export declare function decodeHeaderBlock(block: Uint8Array): Array<[string, string]>;
export declare function encodeCredential(credentials: Credentials): Uint8Array;
export declare function parseCredential(field: Uint8Array):
  | { kind: 'password'; user: string; password: Uint8Array }
  | { kind: 'bearer'; token: Uint8Array }
  | { kind: 'jwt'; jwt: string }
  | null;
export declare function checkTopic(topic: string, what?: string): { bytes: Uint8Array; wildcard: boolean; reserved: boolean };
export declare function checkPublishTopic(topic: string, what?: string): Uint8Array;
export declare function checkQueueGroup(name: string): Uint8Array;
export declare const OP: Readonly<Record<string, number>>;
export declare const ERR: Readonly<Record<string, number>>;
export declare const DEFAULT_MAX_FRAME: number;
