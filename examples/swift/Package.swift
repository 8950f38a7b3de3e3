// swift-tools-version:5.7
import PackageDescription

let package = Package(
    name: "PingAckResume",
    platforms: [.macOS(.v12)],
    dependencies: [.package(path: "../../bindings/swift")],
    targets: [
        .executableTarget(
            name: "PingAckResume",
            dependencies: [.product(name: "Tether", package: "swift")],
            path: "Sources/PingAckResume"),
    ]
)
