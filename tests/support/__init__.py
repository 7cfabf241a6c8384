"""Helpers shared by the test tiers (imported as `support.<module>`).

server           a real `ecolink serve` on loopback (the conftest fixtures' EcolinkServer)
service_harness  an in-memory runtime and a service factory (unit tests of the service)
e2e_helpers      launching clusters through the API, waiting, the exec WebSocket
tui_helpers      dashboard apps over fixed or live feeds, reading the screen (Pilot tests)
shell_helpers    a host app for the shell screens and the terminal widget
tools_helpers    running `ecotui` as a process, with or without a terminal (tool commands)
edge             the demo service behind its URL (security tests)
reliability      bounded catalogs, black-box money checks, raw WebSocket framing
"""
