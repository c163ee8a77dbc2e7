from twisted_exchange.peer.cli import main

main()
