{
  "targets": [
    {
      "target_name": "fdbridge",
      "sources": [
        "native/addon.cc",
        "native/addon_socket.cc",
        "native/addon_frame_channel.cc",
        "native/addon_fd_budget.cc",
        "native/addon_exit_watch.cc",
        "native/addon_relay_pump.cc",
        "native/addon_env.cc",
        "native/addon_background_close.cc",
        "native/addon_fd_functions.cc",
        "native/addon_sock_functions.cc",
        "native/addon_frame_codec.cc",
        "native/addon_lane_writer.cc",
        "native/lane_writer.cc",
        "native/fd_ops.cc",
        "native/fd_hold.cc",
        "native/loop_fds.cc",
        "native/scm_rights.cc",
        "native/sock_ops.cc",
        "native/sock_diag.cc",
        "native/unix_socket.cc",
        "native/socket_wait.cc",
        "native/thread_wake.cc",
        "native/datagram_wait.cc",
        "native/frame_channel.cc",
        "native/fd_watch.cc",
        "native/polled_number.cc",
        "native/relay_pump.cc",
        "native/child_reaper.cc",
        "native/message_batch.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "dependencies": ["<!(node -p \"require('node-addon-api').targets\"):node_addon_api_except"],
      "defines": [
        "NAPI_VERSION=8",
        "_GNU_SOURCE",
        # worker.terminate() can stop JS while the worker is inside one of our
        # methods; node-addon-api must then drop the error it cannot throw
        # instead of aborting the whole process (node-addon-api#975).
        "NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS"
      ],
      "cflags": ["-Wall", "-Wextra", "-Wno-unused-parameter"],
      # -g: file and line of the addon's frames for --track-fds (and gdb, perf); no effect on the code.
      "cflags_cc": ["-std=c++17", "-g", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      # assert()s state invariants (native/unique_fd.h); they are checked in
      # the Debug and sanitizer builds and compiled out of the Release one.
      "configurations": {
        "Release": {"defines": ["NDEBUG"]},
        # ASan + UBSan, assertions on: `npm run build:sanitize` builds it into
        # build/Sanitize/ (the Release addon stays), `npm run test:sanitize`
        # runs suites against it (scripts/test-sanitize.sh). -O1 keeps the
        # suites' run time near the Release build's; frame pointers give
        # ASan's fast unwinder whole stacks.
        "Sanitize": {
          "inherit_from": ["Debug"],
          "cflags": ["-O1", "-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer"],
          "ldflags": ["-fsanitize=address,undefined"]
        }
      }
    }
  ]
}
