// Error classes of the corecast JavaScript client.

/** Base class of every error this client throws or reports. */
export class CorecastError extends Error {
  constructor(message, options) {
    super(message, options);
    this.name = new.target.name;
  }
}

/**
 * Bytes that do not decode as a frame (PROTOCOL.md sections 2.5, 2.6, 13.6.4).
 * `kind` is the name the test vectors use (`Truncated`, `BadUtf8`, ...),
 * `code` the ERR code the failure maps to, `field` the string at fault,
 * `detail` the header-block rule for `BadHeader`.
 */
export class ProtocolError extends CorecastError {
  constructor(kind, code, { field, detail, message } = {}) {
    super(message ?? `protocol error: ${kind}${field ? ` (${field})` : ''}${detail ? ` (${detail})` : ''}`);
    this.kind = kind;
    this.code = code;
    if (field !== undefined) this.field = field;
    if (detail !== undefined) this.detail = detail;
  }
}

/** An ERR frame from the broker. `fatal` says whether the broker closes. */
export class ServerError extends CorecastError {
  constructor(code, fatal, text) {
    super(`server error ${code}${fatal ? ' (fatal)' : ''}: ${text}`);
    this.code = code;
    this.fatal = fatal;
    this.text = text;
  }
}

/** The broker refused the HELLO credential (ERR 7): the client does not retry. */
export class AuthError extends ServerError {}

/** A topic, reply-to or queue group that breaks the rules of PROTOCOL.md section 7 / 13.4. */
export class InvalidTopicError extends CorecastError {}

/** Headers that break the rules of PROTOCOL.md section 13.6.3. */
export class InvalidHeaderError extends CorecastError {}

/** A frame larger than the broker's max_frame (from WELCOME). */
export class FrameTooLargeError extends CorecastError {}

/** The send buffer (`maxBufferBytes`) cannot take the frame. */
export class BufferFullError extends CorecastError {}

/** A request matched no subscription (NO_RESPONDERS, PROTOCOL.md 13.5). */
export class NoRespondersError extends CorecastError {
  constructor(topic) {
    super(`no responders for "${topic}"`);
    this.topic = topic;
  }
}

/** A request, flush or connection attempt that took too long. */
export class TimeoutError extends CorecastError {}

/** The client is closed (by `close()`, by a permanent refusal, or after its last reconnection attempt). */
export class ClosedError extends CorecastError {}

/** The connection failed or was lost. */
export class ConnectionError extends CorecastError {}

/** The feature needs a protocol 1.1 session and the broker granted version 1. */
export class UnsupportedError extends CorecastError {}
