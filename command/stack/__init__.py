"""What starts processes: ``turnout up``'s stack, its supervisor and the
embedded Redis. It sits above the parts it starts (the router, the workers)."""
