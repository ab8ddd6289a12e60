# Stands in for the oracle tests when CMake found no python3 with NumPy: the
# tests fail with this message instead of being skipped.
message(FATAL_ERROR "FAIL: no python3 with NumPy was found when configuring; install "
                    "python3-numpy (Debian) or pass -DDT_VERIFY_PYTHON=/path/to/python3")
