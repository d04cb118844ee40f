"""Where the time and memory of a run went, and the reports that say so (docs/stats.md).

    sampler.py   what the supervisor samples while the run goes on (memory, I/O, channels,
                 the per-second series)
    verdict.py   pure: the bottleneck stage and why
    schema.py    the occystrap.stats/2 document: its Structs, JSON and text
    merge.py     `occystrap report merge`: the shards' documents added up

CPU, time splits and request counts come from each stage's own StageReport
(stages/accounting.py); queue accounting from the channels' statistics (channel.py).
"""
