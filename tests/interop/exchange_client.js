'use strict'
// A Node Grenache client trading on the exchange: looks up `exchange:PEER`
// via the grape at GRAPE_URL, submits one limit order, then reads the book.
// Prints one JSON line: {"submit": {err, data}, "book": {err, data}}.
// Usage: node exchange_client.js GRAPE_URL PEER CLIENT SIDE PRICE QUANTITY [CREDENTIAL_JSON]
// CREDENTIAL_JSON (what `exchangectl client add NAME --json` prints: paths of
// key, cert and ca) switches on Grenache secure mode (mutual TLS), and the
// server must then prove it is PEER of this cluster (its certificate names
// twisted-exchange:peer:PEER): anyone may announce on a grape, so a call
// that reached an impostor moves on to the next address announced.
const crypto = require('crypto')
const fs = require('fs')
const Link = require('grenache-nodejs-link')
const { PeerRPCClient } = require('grenache-nodejs-http')

const [grape, peerId, client, side, price, quantity, credential] = process.argv.slice(2)
setTimeout(() => { console.error('exchange_client.js: no answer in 30 s'); process.exit(2) }, 30000).unref()

const link = new Link({ grape })
link.start()
const files = credential ? JSON.parse(credential) : null
const expected = `URI:twisted-exchange:peer:${peerId}`
const secure = files && {
  key: fs.readFileSync(files.key),
  cert: fs.readFileSync(files.cert),
  ca: fs.readFileSync(files.ca),
  checkServerIdentity: (host, cert) => (cert.subjectaltname || '').split(', ').includes(expected)
    ? undefined
    : new Error(`${host} is not ${expected.slice(4)}`)
}
const peer = new PeerRPCClient(link, secure ? { secure } : {})
peer.init()

// Request ids must increase per client (the exactly-once contract): the
// same form as twisted_exchange/ctl/ids.py, 20-digit nanoseconds + random hex.
const requestId = () => `${(BigInt(Date.now()) * 1000000n).toString().padStart(20, '0')}-` +
  crypto.randomBytes(2).toString('hex')

// Every address announced for the peer, a known good one first, the rest in
// random order; the first that answers (not a transport failure) is the reply.
// Retrying the same payload is safe: the request id makes it apply at most once.
const TRANSPORT = /^(ERR_REQUEST_GENERIC|ERR_TIMEOUT|ERR_REPLY_EMPTY)\b/
const key = `exchange:${peerId}`
let good = null
const lookup = () => new Promise(resolve => link.lookup(key, {}, (err, dests) => resolve(err ? [] : dests)))
const via = (dest, payload) => new Promise(resolve => peer.transport(dest, {}).request(
  key, payload, { timeout: 10000 }, (err, data) => resolve({ err: err ? err.message : null, data })))
const shuffled = (list) => list.map(x => [Math.random(), x]).sort((a, b) => a[0] - b[0]).map(p => p[1])

const call = async (payload) => {
  const dests = shuffled(await lookup()).sort((a, b) => (b === good) - (a === good))
  let reply = { err: `ERR_GRAPE_LOOKUP_EMPTY: nobody announces ${key}`, data: null }
  for (const dest of dests) {
    reply = await via(dest, payload)
    if (!reply.err || !TRANSPORT.test(reply.err)) {
      good = dest
      return reply
    }
  }
  return reply
}

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
