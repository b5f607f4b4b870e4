"""Where tasks come from: verify and parse inbound requests, reply into their thread."""
