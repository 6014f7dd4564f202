// The kvshrink executable. Every MPI rank runs this same program (SPMD); rank 0 is the coordinator
// and the only rank that prints.
//
// Errors: a bad flag is seen identically by every rank (same argv), which all exit with code 2;
// an input error found by a collective check (comm::JobError) is printed once by rank 0 and every
// rank exits with code 1; anything else aborts the whole job through the communicator.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <array>
#include <cstdio>
#include <exception>
#include <utility>

#include "comm/collective_error.h"
#include "comm/communicator.h"
#include "comm/planes.h"
#include "kernels/devices.h"
#include "launch/batch/batch_command.h"
#include "launch/bench_command.h"
#include "launch/bench_throughput_command.h"
#include "launch/calibrate_command.h"
#include "launch/cpu_environment.h"
#include "launch/eval_command.h"
#include "launch/generate_command.h"
#include "launch/info_command.h"
#include "launch/profile_heads_command.h"
#include "launch/serve/serve_command.h"

int main(int argc, char** argv) {
  using namespace kvshrink;
  launch::reexec_with_openblas_coretype(argc, argv);
  comm::Planes planes;
  try {
    planes = comm::make_mpi_planes(&argc, &argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kvshrink: error: %s\n", e.what());
    return 1;
  }
  comm::Communicator* comm = planes.control.get();  // the control plane: error agreement, steps
  const bool coordinator = comm->world().is_coordinator();
  launch::set_compute_threads(comm->world());

  CLI::App app{"kvshrink: a tensor-parallel Llama inference engine with a compressed KV cache"};
  app.require_subcommand(1);
  launch::GenerateOptions generate_options;
  auto* generate = launch::add_generate_command(app, generate_options);
  launch::BenchOptions bench_options;
  auto* bench = launch::add_bench_command(app, bench_options);
  launch::EvalOptions eval_options;
  auto* eval = launch::add_eval_command(app, eval_options);
  launch::ProfileHeadsOptions profile_heads_options;
  auto* profile_heads = launch::add_profile_heads_command(app, profile_heads_options);
  launch::CalibrateOptions calibrate_options;
  auto* calibrate = launch::add_calibrate_command(app, calibrate_options);
  launch::BenchThroughputOptions bench_throughput_options;
  auto* bench_throughput = launch::add_bench_throughput_command(app, bench_throughput_options);
  launch::ServeOptions serve_options;
  auto* serve = launch::add_serve_command(app, serve_options);
  launch::BatchOptions batch_options;
  auto* batch = launch::add_batch_command(app, batch_options);
  auto* info = launch::add_info_command(app);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return coordinator ? app.exit(e) : 0;  // --help
    // CLI11 checks required options before it reports unknown ones; the unknown ones explain more.
    const auto unknown = app.remaining(true);
    const std::string message =
        unknown.empty() ? e.what() : "unknown argument(s): " + CLI::detail::join(unknown, " ");
    if (coordinator) std::fprintf(stderr, "kvshrink: error: %s (see --help)\n", message.c_str());
    return 2;
  }

  // The compute device of the command given (info runs none): with cuda, the data plane moves to
  // NCCL where every rank has a GPU of its own (comm/planes.h).
  const std::array<std::pair<const CLI::App*, const kernels::BackendOptions*>, 8> model_commands{{
      {generate, &generate_options.engine.backend},
      {serve, &serve_options.engine.backend},
      {batch, &batch_options.engine.backend},
      {bench_throughput, &bench_throughput_options.engine.backend},
      {bench, &bench_options.engine.backend},
      {eval, &eval_options.engine.backend},
      {profile_heads, &profile_heads_options.backend},
      {calibrate, &calibrate_options.backend},
  }};
  const bool on_cuda = std::any_of(model_commands.begin(), model_commands.end(), [](const auto& command) {
    return command.first->parsed() && command.second->device == "cuda";
  });

  try {
    if (on_cuda) comm::make_planes_for_cuda(planes, kernels::cuda_device_count());
    if (info->parsed()) return launch::run_info(*comm);
    if (generate->parsed()) return launch::run_generate(generate_options, *comm, *planes.data);
    if (serve->parsed()) return launch::run_serve(serve_options, *comm, *planes.data);
    if (batch->parsed()) return launch::run_batch(batch_options, *comm, *planes.data);
    if (bench_throughput->parsed()) {
      return launch::run_bench_throughput(bench_throughput_options, *comm, *planes.data);
    }
    if (bench->parsed()) return launch::run_bench(bench_options, *comm, *planes.data);
    if (eval->parsed()) return launch::run_eval(eval_options, *comm, *planes.data);
    if (profile_heads->parsed()) return launch::run_profile_heads(profile_heads_options, *comm, *planes.data);
    if (calibrate->parsed()) return launch::run_calibrate(calibrate_options, *comm, *planes.data);
  } catch (const comm::JobError& e) {
    if (coordinator) std::fprintf(stderr, "kvshrink: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    comm->abort(1, e.what());
  }
  return 0;
}
