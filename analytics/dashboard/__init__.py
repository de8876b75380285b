"""`streamrec dashboard`: the live topology map (topology, health rules, collector, web app)."""
