'use strict'
// Node baseline for bench.py: a grenache-nodejs-http PeerRPCClient calling a
// PeerRPCServer in this process over loopback. The link is a stub that knows
// the server's address, as in bench.py, so only RPC is measured.
// Usage: node bench.js REQUESTS INFLIGHT [INFLIGHT...]; prints one JSON line.
const { PeerRPCServer, PeerRPCClient } = require('grenache-nodejs-http')

const [requests, ...inflights] = process.argv.slice(2).map(Number)

function percentile (sorted, p) {
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]
}

async function run (client, count, inflight) {
  const latencies = []
  let next = 0
  const worker = () => new Promise((resolve, reject) => {
    const one = () => {
      if (next++ >= count) return resolve()
      const t0 = process.hrtime.bigint()
      client.request('bench', { n: next }, { timeout: 10000 }, (err) => {
        if (err) return reject(err)
        latencies.push(Number(process.hrtime.bigint() - t0) / 1e6)
        one()
      })
    }
    one()
  })
  const start = process.hrtime.bigint()
  await Promise.all(Array.from({ length: inflight }, worker))
  const seconds = Number(process.hrtime.bigint() - start) / 1e9
  latencies.sort((a, b) => a - b)
  return { inflight, rps: count / seconds, p50_ms: percentile(latencies, 0.5), p99_ms: percentile(latencies, 0.99) }
}

async function main () {
  const server = new PeerRPCServer({}, {})
  server.init()
  const service = server.transport('server')
  service.listen(0)
  await new Promise(resolve => service.socket.once('listening', resolve))
  const dest = '127.0.0.1:' + service.socket.address().port
  service.on('request', (rid, key, payload, handler) => handler.reply(null, payload))

  const link = { lookup: (key, opts, cb) => cb(null, [dest]) }
  const client = new PeerRPCClient(link, {})
  client.init()

  const results = []
  for (const inflight of inflights) {
    await run(client, Math.min(requests, 500), inflight) // warm up
    results.push(await run(client, requests, inflight))
  }
  console.log(JSON.stringify(results))
  client.stop()
  service.unlisten()
  server.stop()
}

main().catch(err => { console.error(err); process.exit(1) })
