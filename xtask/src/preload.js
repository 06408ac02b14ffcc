// Written by `cargo xtask stack up` into target/stack/ and loaded with
// `node --require` (or NODE_OPTIONS=--require=...): forces every TCP server
// that node starts (kinesis-local binds 0.0.0.0 otherwise) onto 127.0.0.1.
'use strict';
const net = require('net');
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  const first = args[0];
  if (first !== null && typeof first === 'object' && !Array.isArray(first)) {
    // listen(options[, backlog][, callback]); unix sockets (path) are left alone
    if (first.path === undefined && first.handle === undefined && first._handle === undefined && first.fd === undefined) {
      args[0] = Object.assign({}, first, { host: '127.0.0.1' });
    }
  } else if (typeof first === 'number' || (typeof first === 'string' && /^\d+$/.test(first))) {
    // listen(port[, host][, backlog][, callback])
    if (typeof args[1] === 'string') {
      args[1] = '127.0.0.1';
    } else {
      args.splice(1, 0, '127.0.0.1');
    }
  } else if (first === undefined || typeof first === 'function') {
    // listen([callback]): a random port
    args.unshift(0, '127.0.0.1');
  }
  return listen.apply(this, args);
};
