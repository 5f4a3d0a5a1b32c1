// Stop requests from the outside: SIGTERM (Slurm at a time limit or on
// preemption, `kill`), SIGINT (Ctrl-C) and SIGUSR1 (Slurm's --signal, or
// `kill -USR1` to mpirun, which forwards it to every rank). The handler only
// records the signal; the trainer looks at every step boundary, agrees with
// the other ranks (one rank's signal stops them all), saves a checkpoint when
// one is configured, marks the manifest "interrupted" and exits with
// kExitInterrupted. The same SIGINT or SIGTERM a second time ends the
// process at once.
#pragma once

namespace vit::train {

// Exit status of a run stopped on request with a checkpoint to resume from
// (EX_TEMPFAIL: "try again"): jobs/ scripts requeue on it.
constexpr int kExitInterrupted = 75;

// Installs the handlers (idempotent); restore_stop_signals() puts back the
// previous ones.
void install_stop_signals();
void restore_stop_signals();

// The first stop signal received since install (0: none).
int pending_stop_signal();

// "SIGTERM", "SIGUSR1", ...
const char* stop_signal_name(int sig);

}  // namespace vit::train
