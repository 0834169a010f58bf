"""The runstore central server (optional extra ``runstore[server]``).

app.py      the FastAPI application: routes, auth middleware, body limits
db.py       the server schema in SQLAlchemy Core and the engine setup
service.py  the operations behind the routes (claims, metric chunks, finalize, listing)
auth.py     users and tokens (hashes only, constant-time comparison)
blobs.py    content-addressed blob storage with resumable, hash-verified uploads
paths.py    canonicalisation of every name and path a client sends
"""
