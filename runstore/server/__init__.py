"""The runstore central server (optional extra ``runstore[server]``).

app.py        the FastAPI application: routes, auth middleware, body limits
db.py         the server schema in SQLAlchemy Core and the engine setup
service.py    the write side of folders and runs (claims, metric chunks, lineage, finalize) and
              the lookups the other operation modules share (folders, node names, run rows)
artifacts.py  artifact claims, missing blobs, artifact detail, who may read a blob
reads.py      the read side: folder listings, path resolution, run detail, metric pages
auth.py       users and tokens (hashes only, constant-time comparison)
blobs.py      content-addressed blob storage with resumable, hash-verified uploads
paths.py      canonicalisation of every name and path a client sends
"""
