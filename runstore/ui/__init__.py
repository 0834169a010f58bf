"""The web UI: the same pages over the server's database (`runstore serve`, with login) and
over the local store (`runstore ui`, read-only). See docs/UI.md.

apps.py        the two apps: the server's UI (login, sessions) and the local one
routes.py      the pages and the chart-data endpoint, over a UIData
data.py        UIData, the interface the pages read, and its records
serverdata.py  UIData over the server's database, one user's folders
local.py       UIData over the local store, strictly read-only
series.py      chart downsampling: server rollups, local SQL bucketing
sessions.py    login sessions and CSRF tokens
format.py      how values look on the pages
"""
