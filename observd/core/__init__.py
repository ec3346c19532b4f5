"""The pure core: header -> frame, planning, calibration, measurement, alignment and
combination maths. No file, database, network or clock access; nothing here imports the
layers around it."""
