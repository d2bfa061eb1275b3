"""GraphiQL served offline: page.py (the page, its CSP and the /graphiql/ assets) and static/
(keyplane's start-up script and style, and vendor/: the pinned builds, their licences and
versions.json, refreshed by `make vendor-graphiql`)."""
