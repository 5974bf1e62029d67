"""reporting: what a researcher takes away. The report page and bundle (`report`), raw exports
(`export`), the pair explorer and its figures (`explorer`, `figures`), the plan's figure
(`planning`) and the one plotting module (`plotting`).

Owns: files and pictures made from analysis results; never writes the database. May import:
`app.analysis`, `app.statistics`, `app.studies`, `app.store`, `app.templating`.
"""
