'use strict'
// Preloaded (NODE_OPTIONS=--require) into the "Haraka 1 proc, TCP_NODELAY" variant only.
//
// Haraka's smtp_client writes a forwarded message as many small writes (each header line, then
// the body) on a socket with Nagle's algorithm on: its socket wrapper's setNoDelay() does
// nothing. The last write then waits for the next hop's delayed ACK, about 40 ms per message.
// This turns Nagle off for every socket Haraka opens; nothing else changes.
const net = require('node:net')

const connect = net.Socket.prototype.connect
net.Socket.prototype.connect = function (...args) {
    this.setNoDelay(true)
    return connect.apply(this, args)
}
