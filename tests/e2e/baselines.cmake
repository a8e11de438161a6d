# End to end: the paper's baselines on a Fashion-MNIST subset. TAKD and DGKD (two students, so
# a two-hop chain) and single-student MC-Distil must each beat the warm-started weights they
# start from, in test accuracy at the best-validation epoch.
# Invoked as: cmake -DAPP=... -DRUN_DIR=... -P this file
if(NOT EXISTS /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz)
  message(FATAL_ERROR "Fashion-MNIST is not installed: apt-get install dataset-fashion-mnist")
endif()
set(common --no-progress --set data.limit_train=8000 --set teacher.arch=resnet10_xs
    --set students.warm_start_epochs=1 --set distill.epochs=2)

function(run_app dir)
  file(REMOVE_RECURSE "${dir}")
  execute_process(COMMAND "${APP}" --run-dir "${dir}" ${common} ${ARGN} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "mcdistil_train ${ARGN} exited with ${rc}")
  endif()
endfunction()

# Every student of every method in DIR/summary.json must beat its warm start.
function(check_beats_warm_start dir)
  file(READ "${dir}/warmstart_done.json" warm)
  file(READ "${dir}/summary.json" summary)
  string(JSON n_warm LENGTH "${warm}" models)
  string(JSON n LENGTH "${summary}" models)
  math(EXPR last "${n} - 1")
  math(EXPR last_warm "${n_warm} - 1")
  set(checked 0)
  foreach(i RANGE ${last})
    string(JSON role GET "${summary}" models ${i} role)
    if(NOT role STREQUAL "student")
      continue()
    endif()
    string(JSON arch GET "${summary}" models ${i} arch)
    string(JSON method GET "${summary}" models ${i} method)
    string(JSON acc GET "${summary}" models ${i} test_acc_best)
    foreach(w RANGE ${last_warm})
      string(JSON warm_arch GET "${warm}" models ${w} arch)
      if(warm_arch STREQUAL arch)
        string(JSON warm_acc GET "${warm}" models ${w} test_acc_best)
      endif()
    endforeach()
    message(STATUS "${method} ${arch}: test accuracy ${warm_acc} after the warm start, ${acc} after")
    if(NOT acc GREATER warm_acc)
      message(FATAL_ERROR "${method} did not improve ${arch}: ${warm_acc} -> ${acc}")
    endif()
    math(EXPR checked "${checked} + 1")
  endforeach()
  if(checked EQUAL 0)
    message(FATAL_ERROR "${dir}/summary.json lists no students")
  endif()
endfunction()

run_app("${RUN_DIR}/chains" --set teacher.epochs=2
        "--set" "students.archs=[\"resnet10_xxxs\",\"resnet10_xxs\"]"
        "--set" "run.methods=[\"takd\",\"dgkd\"]")
check_beats_warm_start("${RUN_DIR}/chains")
foreach(f takd_hop1_done.json takd_hop2_done.json dgkd_hop1_done.json dgkd_hop2_done.json)
  if(NOT EXISTS "${RUN_DIR}/chains/${f}")
    message(FATAL_ERROR "the chain run lacks ${f}")
  endif()
endforeach()

run_app("${RUN_DIR}/single"
        --set "teacher.checkpoint=${RUN_DIR}/chains/teacher_0_resnet10_xs_best.safetensors"
        "--set" "students.archs=[\"resnet10_xxs\"]" --method mcdistil)
check_beats_warm_start("${RUN_DIR}/single")
