#pragma once
#include "lev/detail/config.hpp"  // first: without C++20, one clear error
/// \file
/// Everything lev offers, in one include.

/// \namespace lev
/// lev's public API: the event loop (Loop, LoopOptions, Model), coroutine
/// tasks (Task, JoinHandle, TaskGroup, when_all, when_any, with_timeout),
/// errors as values (Result, Error), files (File, stat, mkdir, rename,
/// unlink), event sources (Watcher, Signal, Waker, PidWatch), processes
/// (spawn, Child), timers, channels and synchronisation between tasks, many
/// loops (Runtime), the program entry point (run, until_stopped) and the
/// fake backend for tests (FakeBackend, FakeOp). Its `detail` namespace is
/// internal.

/// \namespace lev::net
/// Networking companions: listening and accepting (Listener, Acceptor),
/// connecting by name (connect, resolve), buffered streams with codecs
/// (Stream, Codec) and datagram sockets (DatagramSocket).

#include "lev/address.hpp"
#include "lev/backend.hpp"
#include "lev/buffer.hpp"
#include "lev/channel.hpp"
#include "lev/clock.hpp"
#include "lev/deadline.hpp"
#include "lev/error.hpp"
#include "lev/fake.hpp"
#include "lev/fd.hpp"
#include "lev/file.hpp"
#include "lev/log.hpp"
#include "lev/loop.hpp"
#include "lev/net/connect.hpp"
#include "lev/net/datagram.hpp"
#include "lev/net/listen.hpp"
#include "lev/net/stream.hpp"
#include "lev/net/tls.hpp"
#include "lev/op_types.hpp"
#include "lev/operation.hpp"
#include "lev/process.hpp"
#include "lev/run.hpp"
#include "lev/runtime.hpp"
#include "lev/stats.hpp"
#include "lev/sync.hpp"
#include "lev/task.hpp"
#include "lev/task_group.hpp"
#include "lev/timer.hpp"
#include "lev/watchers.hpp"
#include "lev/when.hpp"
