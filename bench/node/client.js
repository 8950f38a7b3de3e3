// What a Node user would otherwise write: `ws` + zlib (raw inflate stream, one per connection,
// gomuks-rpc.md §5) + JSON.parse per line. Usage: node client.js URL COMPRESS(0|1)
'use strict';
const WebSocket = require('ws');
const zlib = require('zlib');

const [url, compressArg] = process.argv.slice(2);
const compress = compressArg === '1';
const wsUrl = url.replace('http://', 'ws://') + '/_gomuks/websocket' + (compress ? '?compress=1' : '');
const ws = new WebSocket(wsUrl, { headers: { Cookie: 'gomuks_auth=bench-token' }, perMessageDeflate: false, maxPayload: 0 });
let start = null;
let events = 0;
let done = false;
let pending = '';

function finish() {
  const secs = Number(process.hrtime.bigint() - start) / 1e9;
  events -= 1; // the run_id snapshot is not an event of the stream
  console.log(JSON.stringify({ client: 'node-ws', events, secs, eps: events / secs }));
  ws.terminate();
  process.exit(0);
}

function lines(text) {
  const parts = (pending + text).split('\n');
  pending = parts.pop();
  for (const line of parts) {
    if (!line) continue;
    const env = JSON.parse(line);
    if (env.command === 'bench_end') { done = true; finish(); return; }
    events++;
  }
}

const inflate = zlib.createInflateRaw();
inflate.setEncoding('utf8');
inflate.on('data', (chunk) => { if (!done) lines(chunk); });

ws.on('message', (data, isBinary) => {
  if (start === null) start = process.hrtime.bigint();
  if (done) return;
  if (isBinary) {
    inflate.write(data);
    inflate.flush(zlib.constants.Z_SYNC_FLUSH);
  } else {
    lines(data.toString());
  }
});
ws.on('error', (e) => { console.error(e); process.exit(1); });
