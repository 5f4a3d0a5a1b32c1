// vit_hpc: the training program. The command line lives in src/io/cli.cpp
// (so tests run the same code); the experiment itself in src/train/.
#include "io/cli.h"
#include "train/run.h"

int main(int argc, char** argv) { return vit::vit_cli_main(argc, argv, vit::run_experiment); }
