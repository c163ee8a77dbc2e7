'use strict'
// Interop (2): a Node PeerRPCServer on PORT, announced as KEY every second on
// the grape at GRAPE_URL. Replies {echo: payload, world: 'world'}, or the
// error 'ERR_INVALID_ORDER: <fail>' when the payload has a `fail` field.
// Usage: node rpc_server.js GRAPE_URL KEY PORT
const Link = require('grenache-nodejs-link')
const { PeerRPCServer } = require('grenache-nodejs-http')

const [grape, key, port] = process.argv.slice(2)
const link = new Link({ grape })
link.start()
const peer = new PeerRPCServer(link, { timeout: 300000 })
peer.init()

const service = peer.transport('server')
service.listen(Number(port))
setInterval(() => link.announce(key, service.port, {}), 1000)
link.announce(key, service.port, {})

service.on('request', (rid, key, payload, handler) => {
  if (payload && payload.fail) {
    handler.reply(new Error('ERR_INVALID_ORDER: ' + payload.fail))
    return
  }
  handler.reply(null, { echo: payload, world: 'world' })
})
