"""web: the HTTP surface. Routes (`routes/`: participants, media, admin, statistics, planning,
site), page rendering and HTML/JSON twins (`pages`), request schemas (`schemas`), dependencies
(`deps`), admin cookie and CSRF (`auth`), the request guard (`guard`), database-outage handling
(`resilience`) and the monitoring check after an answer (`monitoring_stop`).

Owns: nothing stored; routes are thin callers of the packages below. May import: every package
below it (`app.assignment`, `app.reporting`, `app.analysis`, `app.studies`, `app.accounts`,
`app.statistics`, `app.store`), `app.templating`, `app.settings`, `sampler.manifest`. Never
`app.cli`, never torch.
"""
