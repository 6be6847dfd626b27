"""The study of docs/results.md, in miniature over the embedded fingerspelling corpus:
E1 (zero-shot sign language translation through MT) and E2 (more sign languages).

`design` names its directions and groups, `runs` trains its runs in processes,
`analysis` reads their predictions, `seeds` and `report` summarise them. Its mixtures
are in `slt.tasks.study`; the job is `python -m slt.experiment`.
"""
