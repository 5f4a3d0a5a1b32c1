#include "train/stop_signals.h"

#include <signal.h>

#include <csignal>

namespace vit::train {

namespace {

volatile sig_atomic_t g_signal = 0;
bool g_installed = false;
constexpr int kSignals[] = {SIGTERM, SIGINT, SIGUSR1};
struct sigaction g_previous[3];

void on_stop_signal(int sig) {
  if (g_signal == sig && sig != SIGUSR1) {
    // The same request twice (Ctrl-C twice): stop now, as the default action
    // would. Different signals are one request seen twice (Slurm's SIGTERM to
    // the tasks and the batch script's forwarded SIGUSR1).
    ::signal(sig, SIG_DFL);
    ::raise(sig);
    return;
  }
  if (g_signal == 0) g_signal = sig;
}

}  // namespace

void install_stop_signals() {
  if (g_installed) return;
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;  // a read or write in progress continues
  for (int i = 0; i < 3; ++i) sigaction(kSignals[i], &sa, &g_previous[i]);
  g_signal = 0;
  g_installed = true;
}

void restore_stop_signals() {
  if (!g_installed) return;
  for (int i = 0; i < 3; ++i) sigaction(kSignals[i], &g_previous[i], nullptr);
  g_installed = false;
}

int pending_stop_signal() { return g_signal; }

const char* stop_signal_name(int sig) {
  switch (sig) {
    case SIGTERM: return "SIGTERM";
    case SIGINT: return "SIGINT";
    case SIGUSR1: return "SIGUSR1";
    default: return "a signal";
  }
}

}  // namespace vit::train
