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
