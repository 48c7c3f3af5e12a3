"""Development and demo tools, kept out of the service packages.

`local_api` is a local stand-in for the Telegram Bot API (tests, the demo, the load bench), `demo`
runs the whole service with a simulated patient (`skintriage demo`), `demo_models` trains the tiny
synthetic models the demo and the tests use, and `demo_photos/` holds the demo's sample photos.
The service packages (bot, worker, ml, console, skintriage) never import this package; tests/test_layers.py
keeps it so. Its own third-party needs (aiohttp) come with the `demo` extra.
"""
