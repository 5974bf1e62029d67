"""analysis: the statistics of a study in the database. Its ratings as rows (`ratings`), the full
statistics the report and pages show (`study_statistics`), monitoring and the recorded stop
(`monitoring_study`), planning from a pilot (`planning`) and the per-participant review for crowd
platforms (`participant_review`).

Owns: turning stored ratings into results; reads only, except the two explicit writes
(`apply_monitoring_stop`, `set_review`). May import: `app.statistics` (the pure maths),
`app.studies`, `app.store`.
"""
