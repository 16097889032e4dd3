//! `kiln-worker`: executes kiln-llb operations on snapshots for the solver.
//! (Being written: see issue [build].)
