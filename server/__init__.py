"""The process around the app: settings (config), access (login, hosts, CORS), redaction,
per-client connection caps, the cameras of the server, and the entry points (process).

Its modules are imported by name (`from server import config`): several of them are
needed before the cameras exist, so this package imports none of them itself.
"""
