# MPI tests (included by tests/CMakeLists.txt, which builds tests/mpi/*_test.cpp).

foreach(np 1 2 3)
  kvshrink_mpi_test(communicator_np${np} ${np} $<TARGET_FILE:communicator_test>)
  set_tests_properties(communicator_np${np} PROPERTIES TIMEOUT 120)
endforeach()

# One rank aborts: the job must end non-zero with the message printed once. The singleton case
# runs the program without mpirun.
add_test(NAME abort_np3
         COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/mpi/expect_abort.sh "abort_test: rank 1 stops the job"
                 ${KVSHRINK_MPIRUN} ${MPIEXEC_NUMPROC_FLAG} 3 $<TARGET_FILE:abort_test>)
add_test(NAME abort_singleton
         COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/mpi/expect_abort.sh "abort_test: rank 0 stops the job"
                 $<TARGET_FILE:abort_test>)
set_tests_properties(abort_np3 abort_singleton PROPERTIES TIMEOUT 60 ENVIRONMENT
    "OMPI_ALLOW_RUN_AS_ROOT=1;OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1;OMPI_MCA_rmaps_base_oversubscribe=1")

# The sharded model equals one process holding the whole model (logits within 1e-4, same tokens).
foreach(np 1 2 3)
  kvshrink_mpi_test(tensor_parallel_np${np} ${np} $<TARGET_FILE:tensor_parallel_test>)
  set_tests_properties(tensor_parallel_np${np} PROPERTIES TIMEOUT 300)
endforeach()

# KV compression on the sharded model: every method's plan, compaction and greedy tokens equal one
# process holding the whole model (rank 0's reference over MpiCommunicator::self).
foreach(np 1 2 3)
  kvshrink_mpi_test(compression_plan_np${np} ${np} $<TARGET_FILE:compression_plan_test>)
  set_tests_properties(compression_plan_np${np} PROPERTIES TIMEOUT 600)
  # Ranks 1.. wait while rank 0 runs the reference: let them yield the core instead of spinning.
  set_property(TEST compression_plan_np${np} APPEND PROPERTY ENVIRONMENT OMPI_MCA_mpi_yield_when_idle=1)
endforeach()

# A rank that stops or dies ends the job (comm/mpi_watchdog.h). With KVSHRINK_COMM_TIMEOUT=3 the
# others wait 3 s, ping for up to 3 s, and the lowest rank that answered names the stopped one once.
set(stall_env "OMPI_ALLOW_RUN_AS_ROOT=1;OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1;OMPI_MCA_rmaps_base_oversubscribe=1")
set(expect_abort ${CMAKE_CURRENT_SOURCE_DIR}/mpi/expect_abort.sh)
set(stall_job ${KVSHRINK_MPIRUN} ${MPIEXEC_NUMPROC_FLAG})
set(not_answering "did not answer for 3 s (stopped, dead or stuck); ending the job")
add_test(NAME stall_stop_np2
         COMMAND ${expect_abort} "rank 1 ${not_answering}" ${stall_job} 2 $<TARGET_FILE:stall_test> stop)
add_test(NAME stall_stop_np3
         COMMAND ${expect_abort} "rank 2 ${not_answering}" ${stall_job} 3 $<TARGET_FILE:stall_test> stop)
# Rank 0 stops: rank 1 reports, rank 2 hands it what it found.
add_test(NAME stall_stop_rank0_np3
         COMMAND ${expect_abort} "rank 0 ${not_answering}" ${stall_job} 3 $<TARGET_FILE:stall_test> stop 0)
set_tests_properties(stall_stop_np2 stall_stop_np3 stall_stop_rank0_np3 PROPERTIES
    TIMEOUT 60 ENVIRONMENT "${stall_env};EXPECT_ABORT_WITHIN=20;KVSHRINK_COMM_TIMEOUT=3")
# Rank 0 busy for 3 s without a collective, longer than a 1 s timeout and 1 s of pings, does not
# answer either.
add_test(NAME stall_busy_np3
         COMMAND ${expect_abort} "rank 0 did not answer for 1 s (stopped, dead or stuck); ending the job"
                 ${stall_job} 3 $<TARGET_FILE:stall_test> busy)
set_tests_properties(stall_busy_np3 PROPERTIES
    TIMEOUT 60 ENVIRONMENT "${stall_env};EXPECT_ABORT_WITHIN=20;KVSHRINK_COMM_TIMEOUT=1")
# Open MPI ends the job on a dead rank by itself (within 10 s) and names it.
add_test(NAME stall_kill_np3 COMMAND ${expect_abort} - ${stall_job} 3 $<TARGET_FILE:stall_test> kill)
set_tests_properties(stall_kill_np3 PROPERTIES TIMEOUT 60 ENVIRONMENT "${stall_env};EXPECT_ABORT_WITHIN=10")
# Busy for 3 s but calling keep_alive(), under a 1 s timeout: the job finishes normally.
kvshrink_mpi_test(stall_keep_alive_np3 3 $<TARGET_FILE:stall_test> keep-alive)
set_tests_properties(stall_keep_alive_np3 PROPERTIES TIMEOUT 60)
set_property(TEST stall_keep_alive_np3 APPEND PROPERTY ENVIRONMENT KVSHRINK_COMM_TIMEOUT=1)

# Many sequences at once: batched steps equal each sequence alone, the engine's scheduler and step
# protocol (compression per request, preemption under a tiny pool, bad requests failing alone).
foreach(np 1 2 3)
  kvshrink_mpi_test(batched_engine_np${np} ${np} $<TARGET_FILE:batched_engine_test>)
  set_tests_properties(batched_engine_np${np} PROPERTIES TIMEOUT 600)
  set_property(TEST batched_engine_np${np} APPEND PROPERTY ENVIRONMENT OMPI_MCA_mpi_yield_when_idle=1)
endforeach()

# The NCCL data plane against the MPI one on the same inputs (tests/cuda/nccl_communicator_test.cpp),
# built with the CUDA backend. Without a device CTest reports it skipped; with 2 ranks on one GPU
# only its NCCL cases are skipped (make_planes_for_cuda's MPI fallback runs) and it passes.
if(KVSHRINK_CUDA)
  add_executable(nccl_communicator_test ${CMAKE_CURRENT_SOURCE_DIR}/cuda/nccl_communicator_test.cpp)
  target_include_directories(nccl_communicator_test PRIVATE ${CMAKE_CURRENT_SOURCE_DIR})
  target_link_libraries(nccl_communicator_test PRIVATE kvshrink_comm kvshrink_kernels_cuda GTest::gtest)
  foreach(np 1 2)
    kvshrink_mpi_test(nccl_communicator_np${np} ${np} $<TARGET_FILE:nccl_communicator_test>)
    set_tests_properties(nccl_communicator_np${np} PROPERTIES TIMEOUT 120 LABELS cuda
                         SKIP_REGULAR_EXPRESSION "skipped: no CUDA device")
  endforeach()
endif()
