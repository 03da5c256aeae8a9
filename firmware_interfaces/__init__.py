"""The wire between arm firmware and device agent: frame codec, ports, mock arm. Imports nothing of ours."""
