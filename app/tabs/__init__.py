"""One module per tab. Each has ``build(ctx)``, called inside ``gr.Tab``, that lays the tab
out and wires its events; its callbacks are methods of a small class holding ``ctx``."""
