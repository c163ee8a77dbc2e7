'use strict'
// Interop (secure): calls KEY, found via the grape at GRAPE_URL, once per
// MODE, and prints one JSON line [{err, data}, ...]. Modes: `cert`, a Node
// PeerRPCClient in secure mode with DIR/client-NAME.{key,crt} and DIR/ca.crt;
// `plain`, a PeerRPCClient without secure; `nocert`, Node's https client with
// the CA but no client certificate (Grenache's secure mode insists on one).
// Usage: node secure_rpc_client.js GRAPE_URL KEY DIR NAME MODE...
const fs = require('fs')
const https = require('https')
const path = require('path')
const Link = require('grenache-nodejs-link')
const { PeerRPCClient } = require('grenache-nodejs-http')

const [grape, key, dir, name, ...modes] = process.argv.slice(2)
setTimeout(() => { console.error('secure_rpc_client.js: no answer in 20 s'); process.exit(2) }, 20000).unref()
const read = (file) => fs.readFileSync(path.join(dir, file))
const link = new Link({ grape })
link.start()

function viaGrenache (secure, payload) {
  const peer = new PeerRPCClient(link, secure ? { secure } : {})
  peer.init()
  return new Promise(resolve => peer.request(key, payload, { timeout: 5000 }, (err, data) => {
    peer.stop()
    resolve({ err: err ? err.message : null, data })
  }))
}

function withoutCertificate (payload) {
  return new Promise(resolve => link.lookup(key, (err, dests) => {
    if (err) return resolve({ err: err.message, data: null })
    const [host, port] = dests[0].split(':')
    const req = https.request({ host, port, method: 'POST', path: '/', ca: read('ca.crt'), timeout: 5000 }, (res) => {
      const body = []
      res.on('data', (chunk) => body.push(chunk))
      res.on('end', () => resolve({ err: null, data: Buffer.concat(body).toString() }))
    })
    req.on('error', (err) => resolve({ err: `${err.code || ''} ${err.message}`, data: null }))
    req.end(JSON.stringify(['rid-nocert', key, payload]))
  }))
}

const calls = {
  cert: () => viaGrenache({ key: read(`client-${name}.key`), cert: read(`client-${name}.crt`), ca: read('ca.crt') }, { mode: 'cert' }),
  plain: () => viaGrenache(null, { mode: 'plain' }),
  nocert: () => withoutCertificate({ mode: 'nocert' })
}

async function main () {
  const results = []
  for (const mode of modes) results.push(await calls[mode]())
  console.log(JSON.stringify(results))
  link.stop()
}

main()
