'use strict'
// Interop (1): a Node PeerRPCClient looks KEY up via the grape at GRAPE_URL
// and calls it: plain, gzip, an error reply, and map. Prints one JSON line:
// [{err, data}, ...]. Usage: node rpc_client.js GRAPE_URL KEY
const Link = require('grenache-nodejs-link')
const { PeerRPCClient } = require('grenache-nodejs-http')

const [grape, key] = process.argv.slice(2)
setTimeout(() => { console.error('rpc_client.js: no answer in 20 s'); process.exit(2) }, 20000).unref()

const link = new Link({ grape })
link.start()
const peer = new PeerRPCClient(link, {})
peer.init()

const call = (payload, opts) => new Promise(resolve => peer.request(
  key, payload, { timeout: 5000, ...opts },
  (err, data) => resolve({ err: err ? err.message : null, data })))
const map = (payload) => new Promise(resolve => peer.map(
  key, payload, { timeout: 5000 },
  (err, data) => resolve({ err: err ? err.message : null, data })))

async function main () {
  const results = [
    await call({ msg: 'hello' }, {}),
    await call({ msg: 'zipped', big: 'x'.repeat(5000) }, { compress: true }),
    await call({ fail: 'price must be > 0' }, {}),
    await map({ msg: 'all' })
  ]
  console.log(JSON.stringify(results))
  peer.stop()
  link.stop()
}

main()
