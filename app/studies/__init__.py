"""studies: what a study is and what it records. Config and versions (`config`, `config_files`,
`form`), life cycle and auto-close at target (`lifecycle`), pacing of answers (`pacing`), the page
flow around assignment (`flow`), live progress (`progress`), pair-set import and uploads
(`importer`, `uploads`), blinded image encoding (`media`) and the compare-view log (`comparing`).

Owns: studies, pair sets, pairs and their images. May import: `app.store`, `app.statistics`
(exclusion-rule and monitoring-setting validation), `sampler.manifest` (the one contract with the
GPU side), `app.settings`.
"""
