/** Version of the RPC messages between our DOs; a DO rejects a message of another version. */
export const PROTOCOL_VERSION = 1;
