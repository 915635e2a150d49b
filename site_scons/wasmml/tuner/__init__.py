"""The tuner: `scons tune` runs it (never a build) to search schedules for
one model's kernels with TVM's MetaSchedule, into the tuning database that
builds apply (wasmml.tuning_db says where it lives and what it holds).

- cli: the command line and the order of a run;
- search: the tasks, the search space, the cost model, the builder and runner;
- wasm_measure: building and timing a candidate in wasmtime;
- seeding: records found without a search (relaxed SIMD's seed, our
  hand-written schedules);
- database: the database opened, repaired, pruned and measured again;
- report: where an inference's time goes by the database.
"""
