// The official Socket.IO JavaScript client (socket.io-client, pinned in package-lock.json)
// speaking docs/protocol.md to a real flow-cloudbuild-server. Driven by tests/test_protocol_js.py:
//
//   node protocol_client.mjs <scenario> '<json arguments>'
//
// Each scenario prints one JSON object (what it saw) on stdout; the Python test asserts on it.
// Nothing here de-duplicates or re-orders messages: what the test sees is what the wire carried.

import { io } from "socket.io-client";

const FINAL = ["done", "failed", "cancelled", "timed-out"];
const ACK_MS = 15000;

const [scenario, argsJson] = process.argv.slice(2);
const args = JSON.parse(argsJson || "{}");

const watchdog = setTimeout(() => {
  console.error(`scenario ${scenario} did not finish within ${args.timeoutMs || 150000} ms`);
  process.exit(3);
}, args.timeoutMs || 150000);

function socketFor(token, extra = {}) {
  const options = { transports: ["websocket"], reconnection: false, forceNew: true, ...extra };
  if (token !== undefined) options.auth = { token };
  return io(args.url, options);
}

/** Resolves on "connect", rejects with the connect_error's Error. */
function connected(socket) {
  return new Promise((resolve, reject) => {
    if (socket.connected) return resolve();
    const ok = () => { socket.off("connect_error", bad); resolve(); };
    const bad = (err) => { socket.off("connect", ok); reject(err); };
    socket.once("connect", ok);
    socket.once("connect_error", bad);
  });
}

function call(socket, event, payload) {
  return socket.timeout(ACK_MS).emitWithAck(event, payload);
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function httpJson(path, { token, method = "GET" } = {}) {
  const headers = token ? { Authorization: `Bearer ${token}` } : {};
  const resp = await fetch(path.startsWith("http") ? path : args.url + path, { method, headers });
  const text = await resp.text();
  let body = null;
  try { body = JSON.parse(text); } catch { body = text; }
  return { status: resp.status, retryAfter: resp.headers.get("retry-after"), body };
}

/** Every message the socket gets, with the phase (connection) it came on. */
function recorder(socket) {
  const rec = { phase: 1, received: [], waiters: [] };
  socket.on("message", (msg) => {
    rec.received.push({ phase: rec.phase, msg });
    rec.waiters = rec.waiters.filter(({ test, resolve }) => !(test(msg) && (resolve(msg), true)));
  });
  rec.until = (test) => {
    const seen = rec.received.find(({ msg }) => test(msg));
    if (seen) return Promise.resolve(seen.msg);
    return new Promise((resolve) => rec.waiters.push({ test, resolve }));
  };
  rec.final = () => rec.until((msg) => FINAL.includes(msg.data.action));
  rec.log = (text) => rec.until((msg) => msg.data.action === "log" && String(msg.data.payload.message).includes(text));
  return rec;
}

const scenarios = {
  // A connect with a bad (or no) token: what err.message and err.data hold.
  async refusal() {
    const socket = socketFor(args.token);
    try {
      await connected(socket);
      return { connected: true };
    } catch (err) {
      return { connected: false, message: err.message, data: err.data === undefined ? null : err.data };
    } finally {
      socket.disconnect();
    }
  },

  // Publish, follow live; optionally drop the connection at a log line, reconnect the same
  // socket, attach with afterSeq = the last seq seen, and follow to the final message.
  async follow() {
    const socket = socketFor(args.token);
    const rec = recorder(socket);
    await connected(socket);
    const publishAck = await call(socket, "publish", args.publish);
    if (!publishAck.ok) return { publishAck };
    const taskId = publishAck.taskId;
    let attachAck = null;
    let droppedAt = null;
    if (args.dropAtLog) {
      const first = await Promise.race([rec.log(args.dropAtLog), rec.final()]);
      if (FINAL.includes(first.data.action)) return { publishAck, error: "the task ended before the drop", received: rec.received };
      socket.disconnect(); // no message reaches this socket after this
      droppedAt = rec.received[rec.received.length - 1].msg.meta.seq;
      rec.phase = 2;
      await sleep(args.pauseMs || 500);
      socket.connect();
      await connected(socket);
      attachAck = await call(socket, "attach", { taskId, afterSeq: droppedAt });
    }
    const final = await rec.final();
    await sleep(300); // anything after the final message would be a protocol error; catch it
    socket.disconnect();
    const task = await httpJson(`/api/tasks/${taskId}`, { token: args.token });
    const artifacts = final.data.payload.artifactUrl ? await httpJson(final.data.payload.artifactUrl) : null;
    return { taskId, publishAck, attachAck, droppedAt, received: rec.received, task, artifacts };
  },

  // Publish a build that waits, cancel it once it printed args.cancelAtLog, cancel again.
  async cancel() {
    const socket = socketFor(args.token);
    const rec = recorder(socket);
    await connected(socket);
    const publishAck = await call(socket, "publish", args.publish);
    if (!publishAck.ok) return { publishAck };
    const taskId = publishAck.taskId;
    await rec.log(args.cancelAtLog);
    const cancelAck = await call(socket, "cancel", { taskId });
    const final = await rec.final();
    const againAck = await call(socket, "cancel", { taskId });
    socket.disconnect();
    return { taskId, publishAck, cancelAck, againAck, final, received: rec.received };
  },

  // Error acks of the events, and the HTTP routes' status codes and bodies.
  async errors() {
    const socket = socketFor(args.token);
    await connected(socket);
    const unknownId = "0".repeat(24);
    const acks = {
      attachUnknown: await call(socket, "attach", { taskId: unknownId, afterSeq: 0 }),
      attachMalformedId: await call(socket, "attach", { taskId: "not-a-task", afterSeq: 0 }),
      attachBadSeq: await call(socket, "attach", { taskId: unknownId, afterSeq: -1 }),
      attachExtraField: await call(socket, "attach", { taskId: unknownId, afterSeq: 0, since: 3 }),
      cancelUnknown: await call(socket, "cancel", { taskId: unknownId }),
      publishMalformed: await call(socket, "publish", { name: "demo" }),
      publishTooLarge: await call(socket, "publish", { name: "x".repeat(70 * 1024) }),
      unknownEvent: await call(socket, "frobnicate", {}),
    };
    socket.disconnect();
    const http = {
      health: await httpJson("/healthz"),
      healthPost: await httpJson("/healthz", { method: "POST" }),
      taskUnknown: await httpJson(`/api/tasks/${unknownId}`, { token: args.token }),
      taskNoToken: await httpJson(`/api/tasks/${unknownId}`),
      artifactsUnknown: await httpJson(`/artifacts/${unknownId}/`),
      noRoute: await httpJson("/api/nothing-here"),
    };
    return { acks, http };
  },
};

try {
  const run = scenarios[scenario];
  if (!run) throw new Error(`unknown scenario ${scenario}; use one of ${Object.keys(scenarios).join(", ")}`);
  const result = await run();
  process.stdout.write(JSON.stringify(result) + "\n");
  clearTimeout(watchdog);
  process.exit(0);
} catch (err) {
  console.error(`scenario ${scenario} failed: ${err && err.stack ? err.stack : err}`);
  process.exit(2);
}
