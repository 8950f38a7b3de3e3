// swift-tools-version:6.0
// The example depends on the repository's root package the way an app would (by path here,
// by URL in an app). It sits in its own PingAckResume directory because SwiftPM names a path
// package after its directory: two packages in directories both called `swift` clash.
import Foundation
import PackageDescription

// The repository root, and its package identity: the name of the clone's directory, which
// `.product(package:)` must spell (an app that adds tether by URL writes "tether").
let repository = URL(fileURLWithPath: Context.packageDirectory)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

let package = Package(
    name: "PingAckResume",
    platforms: [.macOS(.v13)],
    dependencies: [.package(path: "../../..")],
    targets: [
        .executableTarget(
            name: "PingAckResume",
            dependencies: [.product(name: "Tether", package: repository.lastPathComponent)],
            path: "Sources/PingAckResume"),
    ]
)
