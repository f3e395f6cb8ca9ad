"""The operator API's constants, in one place for both ends: the protocol version the server
speaks and the client expects, and the bounds on what a request may carry -- which the CLI
checks too, before anything is contacted. Standard library only: the client imports it."""

VERSION = 1                           # the API's protocol version (its hello says it)
MAX_LINE = 64 * 1024                  # a request longer than this is refused and the connection closed
MAX_ID = 64
MAX_DIGITS = 100                      # a whole number longer than this is out of every range
MAX_NUMBER = 1e12                     # a qty or a price: beyond any venue's lot; risk limits are the real bound
MAX_PCT = 99.0                        # a stop's distance from the price, in percent
MAX_WAIT_S = 3600.0                   # the longest a request may wait for a starting deployment
COMMAND_WAIT_S = 5.0                  # an open or close sent while the deployment starts waits this long
ASK_TIMEOUT_S = 5.0                   # the API's own asks of the Supervisor or the journal
# A client waits for an open or close this much beyond its `wait`: the API asks at most three
# times after the wait (the phase, the price, the command) and never sends the command after it.
COMMAND_MARGIN_S = 3 * ASK_TIMEOUT_S
