package sandbox_test

const helperEnv = "BLACKBOX_SANDBOX_CRASH_HELPER"

func crashHelper() {}
