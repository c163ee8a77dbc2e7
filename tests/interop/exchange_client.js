'use strict'
// A Node Grenache client trading on the exchange: looks up `exchange:PEER`
// via the grape at GRAPE_URL, submits one limit order, then reads the book.
// Prints one JSON line: {"submit": {err, data}, "book": {err, data}}.
// Usage: node exchange_client.js GRAPE_URL PEER CLIENT SIDE PRICE QUANTITY [CREDENTIAL_JSON]
// CREDENTIAL_JSON (what `exchangectl client add NAME --json` prints: paths of
// key, cert and ca) switches on Grenache secure mode (mutual TLS).
const crypto = require('crypto')
const fs = require('fs')
const Link = require('grenache-nodejs-link')
const { PeerRPCClient } = require('grenache-nodejs-http')

const [grape, peerId, client, side, price, quantity, credential] = process.argv.slice(2)
setTimeout(() => { console.error('exchange_client.js: no answer in 30 s'); process.exit(2) }, 30000).unref()

const link = new Link({ grape })
link.start()
const files = credential ? JSON.parse(credential) : null
const secure = files && {
  key: fs.readFileSync(files.key), cert: fs.readFileSync(files.cert), ca: fs.readFileSync(files.ca)
}
const peer = new PeerRPCClient(link, secure ? { secure } : {})
peer.init()

// Request ids must increase per client (the exactly-once contract): the
// same form as twisted_exchange/ctl/ids.py, 20-digit nanoseconds + random hex.
const requestId = () => `${(BigInt(Date.now()) * 1000000n).toString().padStart(20, '0')}-` +
  crypto.randomBytes(2).toString('hex')

const call = (payload) => new Promise(resolve => peer.request(
  `exchange:${peerId}`, payload, { timeout: 10000 },
  (err, data) => resolve({ err: err ? err.message : null, data })))

async function main () {
  const submit = await call({
    action: 'submit', client, request: requestId(), symbol: 'BTCUSD',
    side, type: 'limit', price, quantity
  })
  const book = await call({ action: 'book', symbol: 'BTCUSD' })
  console.log(JSON.stringify({ submit, book }))
  peer.stop()
  link.stop()
}

main()
