"""store: the database of record. Engine and sessions (`db`: SQLite/PostgreSQL, migrations on
start, retry-safe connections), the SQLAlchemy models (`models`) and what text a column may hold
(`text`).

Owns: every table and how to connect to it. May import: `app.settings`, `app.resources`. Nothing
else in `app` (it is the bottom floor: every other package may import it).
"""
