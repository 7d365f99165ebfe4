#!/usr/bin/env node
// ws_hub.js: the Node peer of `make bench`, a minimal room hub on the `ws`
// package speaking the subset of gohub's /ws protocol the benchmarks use
// (shared/PROTOCOL.md envelope):
//
//   join_room    {room_id}          -> room_joined {room_id, status:"joined", member_count}
//   leave_room   {room_id}          -> room_left {room_id, status:"left"}
//   room_message {room_id, content} -> every other member: room_message
//                                      {room_id, content, sender_id, timestamp}
//                                      (ack {request_id} to the sender when message_id != 0)
//   ping         {ts?}              -> pong {ts, server_ts, rtt}
//   lookup       {key}              -> found {value}   (the bench's custom handler)
//
// Replies carry request_id when the request's message_id is non-zero; errors
// use gohub's codes. A room message is serialised once and the same string is
// sent to every recipient. Written the way a production ws hub is written:
// no per-message deflate, a 64 KiB payload cap (gohub's limits.max_message_bytes),
// a 25 s heartbeat that drops dead peers (gohub's server.ping_interval),
// rooms left on close. One process, Node's usual deployment.
//
//   node scripts/bench/ws_hub.js [--port 8090] [--host 127.0.0.1]
// or GOHUB_SERVER_ADDR=127.0.0.1:8090 node scripts/bench/ws_hub.js
// `ws` is resolved from build/bench-node/ (scripts/bench/setup_node.sh) or
// NODE_PATH.
'use strict';

const path = require('path');

function loadWs() {
  const local = path.join(__dirname, '..', '..', 'build', 'bench-node', 'node_modules');
  try {
    return require(require.resolve('ws', { paths: [local] }));
  } catch (_) {
    return require('ws');
  }
}
const { WebSocketServer, WebSocket } = loadWs();

function parseArgs(argv) {
  const opts = { host: '127.0.0.1', port: 8090 };
  const addr = process.env.GOHUB_SERVER_ADDR;
  if (addr) {
    const i = addr.lastIndexOf(':');
    if (i > 0) opts.host = addr.slice(0, i).replace(/^\[|\]$/g, '');
    opts.port = Number(addr.slice(i + 1));
  }
  for (let i = 2; i < argv.length; i++) {
    if (argv[i] === '--port') opts.port = Number(argv[++i]);
    else if (argv[i] === '--host') opts.host = argv[++i];
    else {
      console.error('usage: ws_hub.js [--port P] [--host H]');
      process.exit(2);
    }
  }
  return opts;
}

const ERR = {
  INVALID_FORMAT: 1001,
  UNKNOWN_TYPE: 1006,
  ROOM_NOT_FOUND: 3000,
  NOT_IN_ROOM: 3003,
  ALREADY_IN_ROOM: 3004,
};

// The custom handler's table, built once: k1..k1000 -> 1..1000.
const table = new Map();
for (let i = 1; i <= 1000; i++) table.set('k' + i, i);

const rooms = new Map(); // room_id -> Set<WebSocket>
let nextClientId = 1;
let nextMessageId = 1;

function envelope(type, data, requestId) {
  const msg = {
    message_id: nextMessageId++,
    message_type: type,
    data,
    timestamp: Date.now(),
  };
  if (requestId) msg.request_id = requestId;
  return JSON.stringify(msg);
}

function reply(ws, type, data, requestId) {
  ws.send(envelope(type, data, requestId));
}

function sendError(ws, code, message, requestId) {
  const rid = requestId || 0;
  ws.send(envelope('error', { code, message, request_id: rid }, rid));
}

function validRoomId(id) {
  return typeof id === 'string' && id.length > 0 && id.length <= 128;
}

function leaveAll(ws) {
  for (const roomId of ws.rooms) {
    const members = rooms.get(roomId);
    if (!members) continue;
    members.delete(ws);
    if (members.size === 0) rooms.delete(roomId);
  }
  ws.rooms.clear();
}

const handlers = {
  join_room(ws, data, rid) {
    const roomId = data.room_id;
    if (!validRoomId(roomId)) return sendError(ws, ERR.INVALID_FORMAT, 'room_id must be a string', rid);
    let members = rooms.get(roomId);
    if (!members) {
      members = new Set();
      rooms.set(roomId, members);
    }
    if (members.has(ws)) return sendError(ws, ERR.ALREADY_IN_ROOM, 'already in room', rid);
    members.add(ws);
    ws.rooms.add(roomId);
    reply(ws, 'room_joined', { room_id: roomId, status: 'joined', member_count: members.size }, rid);
  },

  leave_room(ws, data, rid) {
    const roomId = data.room_id;
    if (!validRoomId(roomId)) return sendError(ws, ERR.INVALID_FORMAT, 'room_id must be a string', rid);
    const members = rooms.get(roomId);
    if (!members || !members.has(ws)) return sendError(ws, ERR.NOT_IN_ROOM, 'not in room', rid);
    members.delete(ws);
    ws.rooms.delete(roomId);
    if (members.size === 0) rooms.delete(roomId);
    reply(ws, 'room_left', { room_id: roomId, status: 'left' }, rid);
  },

  room_message(ws, data, rid) {
    const roomId = data.room_id;
    if (!validRoomId(roomId)) return sendError(ws, ERR.INVALID_FORMAT, 'room_id must be a string', rid);
    if (!('content' in data)) return sendError(ws, ERR.INVALID_FORMAT, 'content is required', rid);
    const members = rooms.get(roomId);
    if (!members) return sendError(ws, ERR.ROOM_NOT_FOUND, 'room not found', rid);
    if (!members.has(ws)) return sendError(ws, ERR.NOT_IN_ROOM, 'not in room', rid);
    const now = Date.now();
    // serialised once, the same string goes to every recipient
    const frame = JSON.stringify({
      message_id: nextMessageId++,
      message_type: 'room_message',
      data: { room_id: roomId, content: data.content, sender_id: ws.userId, timestamp: now },
      timestamp: now,
    });
    for (const member of members) {
      if (member !== ws && member.readyState === WebSocket.OPEN) member.send(frame);
    }
    if (rid) reply(ws, 'ack', { request_id: rid }, rid);
  },

  ping(ws, data, rid) {
    const serverTs = Date.now();
    const ts = data.ts;
    if (ts !== undefined && typeof ts !== 'number') {
      return sendError(ws, ERR.INVALID_FORMAT, 'ts must be a number', rid);
    }
    if (typeof ts !== 'number') return reply(ws, 'pong', { ts: null, server_ts: serverTs, rtt: 0 }, rid);
    reply(ws, 'pong', { ts, server_ts: serverTs, rtt: serverTs - ts }, rid);
  },

  lookup(ws, data, rid) {
    reply(ws, 'found', { value: table.get(data.key) ?? null }, rid);
  },
};

function onMessage(raw, isBinary) {
  const ws = this;
  if (isBinary) return ws.close(1003, 'binary data');
  let msg;
  try {
    msg = JSON.parse(raw);
  } catch (_) {
    return sendError(ws, ERR.INVALID_FORMAT, 'invalid JSON', 0);
  }
  if (msg === null || typeof msg !== 'object' || Array.isArray(msg)) {
    return sendError(ws, ERR.INVALID_FORMAT, 'not an object', 0);
  }
  const rid = Number.isInteger(msg.message_id) && msg.message_id > 0 ? msg.message_id : 0;
  const type = msg.message_type;
  if (typeof type !== 'string') return sendError(ws, ERR.INVALID_FORMAT, 'message_type must be a string', rid);
  let data = msg.data;
  if (data === undefined) data = {};
  if (data === null || typeof data !== 'object' || Array.isArray(data)) {
    return sendError(ws, ERR.INVALID_FORMAT, 'data must be an object', rid);
  }
  const handler = Object.prototype.hasOwnProperty.call(handlers, type) ? handlers[type] : undefined;
  if (!handler) return sendError(ws, ERR.UNKNOWN_TYPE, 'unknown message type', rid);
  handler(ws, data, rid);
}

function heartbeat() {
  this.isAlive = true;
}

function main() {
  const { host, port } = parseArgs(process.argv);
  const wss = new WebSocketServer({
    host,
    port,
    path: '/ws',
    backlog: 4096, // gohub listens with 4096
    perMessageDeflate: false,
    maxPayload: 64 * 1024,
  });

  wss.on('connection', (ws) => {
    const id = nextClientId++;
    ws.clientId = 'c' + id;
    ws.userId = 'anon-c' + id;
    ws.rooms = new Set();
    ws.isAlive = true;
    ws.on('pong', heartbeat);
    ws.on('message', onMessage);
    ws.on('error', () => {});
    ws.on('close', () => leaveAll(ws));
  });

  const interval = setInterval(() => {
    for (const ws of wss.clients) {
      if (!ws.isAlive) {
        ws.terminate();
        continue;
      }
      ws.isAlive = false;
      ws.ping();
    }
  }, 25000);

  wss.on('listening', () => {
    console.log(`ws_hub listening on ${host}:${port} (pid ${process.pid}, node ${process.version})`);
  });
  wss.on('error', (err) => {
    console.error('ws_hub:', err.message);
    process.exit(1);
  });

  const stop = () => {
    clearInterval(interval);
    for (const ws of wss.clients) ws.terminate();
    wss.close(() => process.exit(0));
    setTimeout(() => process.exit(0), 2000).unref();
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main();
