// What every file of the C++ shim shares: turning a C++ exception into a return code and a
// message, since nothing may throw across the C boundary.
#pragma once

#include <c10/util/Exception.h>

#include <cstring>
#include <exception>
#include <string>

namespace rlhf_shim {

// Copies `msg` into the caller's buffer `err` of `len` bytes, NUL-terminated and cut to fit.
inline void set_err(char* err, size_t len, const std::string& msg) {
  if (err == nullptr || len == 0) return;
  size_t n = msg.size() < len - 1 ? msg.size() : len - 1;
  std::memcpy(err, msg.data(), n);
  err[n] = 0;
}

// libtorch's messages carry a C++ backtrace after the first lines; keep the message itself.
inline std::string first_lines(const std::string& what) {
  auto cut = what.find("\nException raised from");
  return cut == std::string::npos ? what : what.substr(0, cut);
}

// Runs `f`: 0, or -1 with the exception's message in `err`.
template <typename F>
int guarded(char* err, size_t len, F&& f) {
  try {
    f();
    return 0;
  } catch (const c10::Error& e) {
    set_err(err, len, first_lines(e.what_without_backtrace()));
  } catch (const std::exception& e) {
    set_err(err, len, first_lines(e.what()));
  } catch (...) {
    set_err(err, len, "unknown C++ exception");
  }
  return -1;
}

}  // namespace rlhf_shim
