# keypin device application (placeholder until the app lands).
print("main: keypin device app")
