// qstrs of the upy32 test interpreter (none beyond the core's)
