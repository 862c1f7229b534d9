// corecast client for browsers and Node.js: public entry point.
export { connect, Client, Subscription, Message, backoffDelay } from './src/client.js';
export * from './src/errors.js';
export {
  Decoder, encodeFrame, decodeFrame, encodeHeaderBlock, decodeHeaderBlock, headerPairs, headersToMap,
  encodeCredential, parseCredential, checkTopic, checkPublishTopic, checkQueueGroup, OP, ERR, DEFAULT_MAX_FRAME,
} from './src/codec.js';
