'use strict'
// Interop (secure): a Node PeerRPCServer in secure mode on PORT, announced as
// KEY on the grape at GRAPE_URL, with the credential DIR/peer-NAME.{key,crt}
// and DIR/ca.crt. Grenache passes `secure` to https.createServer as it is,
// which asks for no client certificate unless told: requestCert and
// rejectUnauthorized make it mutual TLS. Replies {echo: payload, caller:
// <the client certificate's subjectaltname, from meta.cert>}.
// Usage: node secure_rpc_server.js GRAPE_URL KEY PORT DIR NAME
const fs = require('fs')
const path = require('path')
const Link = require('grenache-nodejs-link')
const { PeerRPCServer } = require('grenache-nodejs-http')

const [grape, key, port, dir, name] = process.argv.slice(2)
const read = (file) => fs.readFileSync(path.join(dir, file))
const secure = {
  key: read(`peer-${name}.key`),
  cert: read(`peer-${name}.crt`),
  ca: read('ca.crt'),
  requestCert: true,
  rejectUnauthorized: true
}
const link = new Link({ grape })
link.start()
const peer = new PeerRPCServer(link, { secure, timeout: 300000 })
peer.init()

const service = peer.transport('server')
service.listen(Number(port))
setInterval(() => link.announce(key, service.port, {}), 1000)
link.announce(key, service.port, {})

service.on('request', (rid, key, payload, handler, cert) => {
  handler.reply(null, { echo: payload, caller: cert.subjectaltname })
})
