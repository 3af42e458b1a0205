#pragma once
#include "lev/detail/config.hpp"  // first: without C++20, one clear error
/// \file
/// Everything lev offers, in one include.

#include "lev/address.hpp"
#include "lev/backend.hpp"
#include "lev/buffer.hpp"
#include "lev/channel.hpp"
#include "lev/clock.hpp"
#include "lev/error.hpp"
#include "lev/fake.hpp"
#include "lev/fd.hpp"
#include "lev/log.hpp"
#include "lev/loop.hpp"
#include "lev/net/connect.hpp"
#include "lev/net/listen.hpp"
#include "lev/net/stream.hpp"
#include "lev/op_types.hpp"
#include "lev/operation.hpp"
#include "lev/process.hpp"
#include "lev/runtime.hpp"
#include "lev/stats.hpp"
#include "lev/sync.hpp"
#include "lev/task.hpp"
#include "lev/task_group.hpp"
#include "lev/timer.hpp"
#include "lev/watchers.hpp"
#include "lev/when.hpp"
