package storage

// oNoFollow is 0 on windows, which has no O_NOFOLLOW. Only the manager
// writes into a file:// store, and it runs on Linux; on windows this package
// serves the kubectl plugin, which reads objects and never writes the
// sidecars this flag protects.
const oNoFollow = 0
